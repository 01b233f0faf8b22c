"""Two-phase training: tokenizer, then LAM + dynamics co-trained."""
