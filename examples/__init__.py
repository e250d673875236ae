"""Applications built on wsfleet: each shows one way to use it, start to finish."""
