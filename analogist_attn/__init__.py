"""Host-independent math of the Analogist method, in plain torch (no ComfyUI import).

* ``layout``: the 2x2 grid geometry shared by every node.
"""
