"""The action encoder of the world model: a step's action, whatever its kinds, to one embedding per step
(docs/engine.md, "Models"; docs/method.md §3).

``ActionEncoder`` embeds float action vectors laid out by an ``ActionSpec``. Each component has a table of
embeddings, and a step's embedding is the sum of its components':

- ``discrete`` and ``bins``: the row of the column's index;
- ``keys``: the sum of the rows of the pressed keys (the multi-hot columns times the table);
- ``continuous``: the value, mapped from [low, high] to [-1, 1], times the table's one row.

With the CS:GO action space (keys, clicks, mouse-x bins, mouse-y bins) this is the official CS:GO model's
action embedding, the 51-wide multi-hot vector times one table, split by components. The tables are
``nn.Embedding`` weights (drawn from N(0, 1) and exempt from weight decay, as every embedding of the project),
in the order of the components and, within one, of its rows: stacked, they are that one table.

``DiscreteActionEncoder`` is the same embedding for a spec of one ``discrete`` component whose actions come
as int64 indices: the Atari world model's, an ``nn.Embedding`` itself, so that its weight keeps the name
``act_emb.weight`` of the agent's checkpoints and of the official DIAMOND file.
"""

from __future__ import annotations

from torch import Tensor, nn

from diffworld.data.actions import ActionSpec, Bins, Continuous, Discrete, Keys


def _num_rows(component: Discrete | Keys | Bins | Continuous) -> int:
    if isinstance(component, Discrete | Bins):
        return component.n
    return component.width


class ActionEncoder(nn.Module):
    """(B, L, D) float action vectors laid out by ``spec`` -> (B, L, ``dim``) embeddings.

    Steps where ``valid`` is False (the padding before an episode's first frame) embed to zero: the official
    CS:GO code pads with an all-zero action vector, which selects no row, whereas index 0 of a ``bins``
    component is a real action (the largest mouse movement).
    """

    def __init__(self, spec: ActionSpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.dim = dim
        self.tables = nn.ModuleList([nn.Embedding(_num_rows(c), dim) for c in spec.components])

    def forward(self, act: Tensor, valid: Tensor | None = None) -> Tensor:
        """``act``: (B, L, D); ``valid``: (B, L) bool, None when every step is a real one."""
        if act.size(-1) != self.spec.width:
            raise ValueError(f"action vectors of width {act.size(-1)} given, the spec has {self.spec.width}")
        out = act.new_zeros(*act.shape[:-1], self.dim)
        for (component, cols), table in zip(self.spec.columns(), self.tables, strict=True):
            assert isinstance(table, nn.Embedding)
            values = act[..., cols]
            if isinstance(component, Discrete | Bins):
                out = out + table(values[..., 0].round().long())
            elif isinstance(component, Keys):
                out = out + values @ table.weight
            else:
                half_range = (component.high - component.low) / 2
                centred = (values - (component.low + half_range)) / half_range
                out = out + centred @ table.weight
        if valid is not None:
            out = out * valid[..., None].to(out.dtype)
        return out


class DiscreteActionEncoder(nn.Embedding):
    """(B, L) int64 action indices -> (B, L, dim) embeddings: ``nn.Embedding(num_actions, dim)``.

    Padding steps hold index 0, a real action, and embed as it (the official DIAMOND Atari code), unless
    ``valid`` says they are padding.
    """

    def forward(self, act: Tensor, valid: Tensor | None = None) -> Tensor:
        """``act``: (B, L) int64; ``valid``: (B, L) bool, False for the steps to embed to zero, None when
        every step is a real one."""
        out = super().forward(act)
        if valid is not None:
            out = out * valid[..., None].to(out.dtype)
        return out


def make_action_encoder(
    spec: ActionSpec, dim: int, *, indices: bool
) -> ActionEncoder | DiscreteActionEncoder:
    """The encoder of ``spec`` into ``dim`` dims per step: of action vectors, or with ``indices`` of int64
    indices (``DiscreteActionEncoder``), which needs a spec of one ``discrete`` component."""
    if not indices:
        return ActionEncoder(spec, dim)
    component = spec.components[0]
    if len(spec.components) != 1 or not isinstance(component, Discrete):
        raise ValueError(f"actions given as indices need one discrete component, not {spec.describe()}")
    return DiscreteActionEncoder(component.n, dim)
