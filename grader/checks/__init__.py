"""One check module per lesson; importing them registers every exercise."""
