"""nrlib — the science library behind the book on neuron-level adversarial
robustness: data, models, attacks, hooks, metrics; training (``train`` gathers
the loop ``fitting``, its ``objectives``, ``sns``, ``checkpoints``, ``recipes``
and the model ``zoo``); one module per paper's method (``fragile``,
``sensitivity`` and ``regularizers``, ``dominant``, ``toggle`` with
``thresholds`` and ``ranking``), the papers' published numbers (``papers``),
shared figures (``plot``), slider panels (``widgets``) and results files
(``results``). The book's build tools live apart, in ``nrbook``; nrlib never
imports them.

Importing nrlib asks glibc's malloc to reuse freed blocks rather than return them to the
kernel (``utils.keep_freed_memory``): CPU training and attacks run faster, with the same numbers."""
from .utils import keep_freed_memory as _keep_freed_memory

__version__ = "0.2.0"
MALLOC_TUNED = _keep_freed_memory()
