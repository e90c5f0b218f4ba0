"""Ultra-high-resolution refinement engine: schedule, tiling, lazy I/O, band selection."""
