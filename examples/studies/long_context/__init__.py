"""Long inputs: cost at n = 4096, warm start from a RoBERTa trained at 512, long-document classification."""
