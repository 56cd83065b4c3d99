"""Event boxes: a query naming several participants ("a vendor selling vegetables") split
into its participant phrases, each grounded, compatible participants paired, and the answer
the box around all of them with each participant's box in ``parts``.

SKELETON: the events helper fills this module (see the issue).
"""

from __future__ import annotations
