"""Live views of a cluster: the model they draw from, fed by the head's event stream.

``model.ViewModel`` keeps tasks, objects, nodes and the DAG layout from any
event source; :func:`live` gives the one model of this process's cluster,
fed by the head's subscription. The notebook widget (``jray.jupyter.dashboard``)
and the JupyterLab panel render what it holds.
"""

from __future__ import annotations

from jray.views.live import Live, live

__all__ = ["Live", "live"]
