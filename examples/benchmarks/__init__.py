"""Speed and memory: the attention module alone, and whole-model training through fairseq-train."""
