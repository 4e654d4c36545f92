"""A key/value cache that grows in place: the prefill cache is expanded to one row per sample
in buffers with room for every new token, so a decode step writes one position instead of
concatenating (copying) the whole cache of every layer (transformers >= 4.56 per-layer
caches; other caches only get the row selection)."""

from __future__ import annotations

import torch


# -- a key/value cache that grows in place ----------------------------------------------------
try:   # transformers >= 4.56: caches hold per-layer objects
    from transformers.cache_utils import DynamicLayer as _DynamicLayer
except ImportError:  # pragma: no cover - older transformers: the cache grows by concatenation
    _DynamicLayer = None

if _DynamicLayer is not None:
    class _ReservedLayer(_DynamicLayer):
        """A DynamicLayer whose keys/values live in a buffer with room for the new tokens:
        `update` writes the new positions instead of concatenating (which copies the whole
        cache of every layer at every step). `keys`/`values` stay views of the filled part,
        so everything else in transformers reads them as before."""

        def update(self, key_states, value_states, *args, **kwargs):
            n, m = self._filled, key_states.shape[-2]
            if n + m > self._key_buffer.shape[-2]:          # out of room: plain concatenation
                self.__class__ = _DynamicLayer
                return _DynamicLayer.update(self, key_states, value_states, *args, **kwargs)
            self._key_buffer[:, :, n:n + m].copy_(key_states)
            self._value_buffer[:, :, n:n + m].copy_(value_states)
            self._filled = n + m
            self.keys = self._key_buffer[:, :, :n + m]
            self.values = self._value_buffer[:, :, :n + m]
            return self.keys, self.values


def reserve_cache(cache, select: torch.Tensor, room: int) -> None:
    """Expand the prefill cache to the rows `select` (one per requested sample) in buffers
    with `room` more positions. Caches of other kinds (sliding windows, older transformers)
    only get the row selection and grow as usual."""
    layers = getattr(cache, "layers", None)
    if (_DynamicLayer is None or not layers or room <= 0
            or any(type(layer) is not _DynamicLayer or not layer.is_initialized
                   or layer.keys.dim() != 4 for layer in layers)):
        cache.batch_select_indices(select)
        return
    for layer in layers:
        keys, values = layer.keys, layer.values
        rows, filled = select.shape[0], keys.shape[-2]
        key_buffer = keys.new_empty((rows, keys.shape[1], filled + room, keys.shape[3]))
        value_buffer = values.new_empty((rows, values.shape[1], filled + room, values.shape[3]))
        key_buffer[:, :, :filled].copy_(keys.index_select(0, select))
        value_buffer[:, :, :filled].copy_(values.index_select(0, select))
        layer.__class__ = _ReservedLayer
        layer._key_buffer, layer._value_buffer, layer._filled = key_buffer, value_buffer, filled
        layer.keys, layer.values = key_buffer[:, :, :filled], value_buffer[:, :, :filled]
