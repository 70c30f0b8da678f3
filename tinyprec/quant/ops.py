"""Which exported aten ops stage 2 quantizes, and how (torch-free views of :mod:`tinyprec.optable.table`).

Each supported op of the exported graph (its ``str(node.target)``, e.g. ``"aten.conv2d.default"``)
maps to a :class:`Role` that says how the TFLite int8 quantizer annotates it. The rows live in
:data:`tinyprec.optable.table.OPS`, which also drives the lowering; these tables are derived from it.
"""

from __future__ import annotations

from types import MappingProxyType

from tinyprec.optable.table import OPS, supported_summary
from tinyprec.optable.roles import Fixed, Role

OP_ROLES: MappingProxyType[str, Role] = MappingProxyType({name: row.role for name, row in OPS.items()})

FIXED_QPARAMS: MappingProxyType[str, Fixed] = MappingProxyType(
    {name: row.fixed for name, row in OPS.items() if row.fixed is not None})

#: What a user may put in a model, for error messages (PyTorch spelling).
SUPPORTED_SUMMARY = supported_summary()


def role_of(target_name: str) -> Role | None:
    """The role of an exported op by its target name, or None if stage 2 cannot quantize it."""
    return OP_ROLES.get(target_name)


__all__ = ["FIXED_QPARAMS", "OP_ROLES", "SUPPORTED_SUMMARY", "Fixed", "Role", "role_of"]
