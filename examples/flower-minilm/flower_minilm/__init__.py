"""A Flower app that federates deft6g's LoRA on the packaged MiniLM as `deft6g study` does (README.md)."""
