"""Studies: does it learn like RoBERTa (quality), long inputs end to end (long_context), data-parallel
training and mixed precision (multi_gpu). Each has a README and its results."""
