"""volbmd's napari plugin (npe2): reader, demo sample, Analyze and Review widgets.

Importing this package does not import napari or Qt; the widgets do, when napari loads them.
"""
