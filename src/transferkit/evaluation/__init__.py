"""What a trained model does on data: predictions and scores (`predict`), the numbers (`metrics`, `report`) and
the page a person looks at (`html`)."""
