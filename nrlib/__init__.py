"""nrlib — the thin library of core kernels behind the book on neuron-level
adversarial robustness. One module per idea; see DESIGN.md."""
__version__ = "0.1.0"
