"""nrlib — the science library behind the book on neuron-level adversarial
robustness: data, models, training and the model zoo, attacks, hooks, metrics,
one module per paper's method (``fragile``, ``dominant``, ``toggle``), the
papers' published numbers (``papers``), shared figures (``plot``), slider
panels (``widgets``) and results files (``results``). The book's build tools
live apart, in ``nrbook``; nrlib never imports them."""
__version__ = "0.2.0"
