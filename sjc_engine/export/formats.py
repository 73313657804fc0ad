"""The file formats the exporters write; imports nothing heavy, so the service's API can list them.

:data:`MESH_FORMATS` is what a job's ``mesh_formats`` may name and what :func:`sjc_engine.export.mesh.save_mesh`
writes (``mesh.<format>``, plus the files a format needs beside it):

- ``glb``: binary glTF, UV-mapped, with a diffuse PBR material and its base-colour texture embedded;
- ``obj``: ``mesh.obj`` with ``mesh.mtl`` and the texture ``mesh.png`` beside it;
- ``ply``: binary PLY with vertex normals and uint8 sRGB vertex colours;
- ``stl``: binary STL, geometry only.
"""

from __future__ import annotations

MESH_FORMATS: tuple[str, ...] = ("glb", "ply", "obj", "stl")
