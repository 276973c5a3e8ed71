"""Speed comparisons of minigrad with PyTorch, HIPS autograd, MyGrad and hand-written NumPy (see README.md)."""
