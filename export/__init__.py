"""compact_lm.export: ONNX graph builders (installed from the top-level `export/` folder).

The graphs themselves arrive with the export stage; this package already installs under its final
name so that the layout and the import path are fixed from the start.
"""
