"""nrlib — the science library behind the book on neuron-level adversarial
robustness: data, models, attacks, hooks, metrics; training (``train`` gathers
the loop ``fitting``, its ``objectives``, ``sns``, ``checkpoints``, ``recipes``
and the model ``zoo``); one module per paper's method (``fragile``,
``sensitivity`` and ``regularizers``, ``dominant``, ``toggle`` with
``thresholds`` and ``ranking``), the papers' published numbers (``papers``),
shared figures (``plot``), slider panels (``widgets``) and results files
(``results``). The book's build tools live apart, in ``nrbook``; nrlib never
imports them."""
__version__ = "0.2.0"
