"""Text, the second modality: the sentence-encoder table (`encoders`), where an encoder's files come from
(`weights`), the encoder itself (`encoder`), labelled texts from CSV, JSON Lines or folders (`data`) and the
texts that repeat one another (`repeats`)."""
