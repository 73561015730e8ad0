"""Pretrained networks as data: the spec of a row (`spec`), the table of rows (`table`), lookup by name
(`registry`) and where the weights come from, hash-checked (`weights`)."""
