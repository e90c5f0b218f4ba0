"""``python -m napari_airm.cli``: the ``napari-airm`` command."""
from . import console_main

console_main()
