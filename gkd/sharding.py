"""Device mesh, parameter sharding (replicated or FSDP) and batch placement.

The mesh has two axes, `data` and `fsdp`. The batch is split over both (every device sees a
different slice); parameters are replicated, or with fsdp>1 each large tensor is split along
its largest divisible dimension over `fsdp`. XLA's partitioner inserts the all-gathers and
reduce-scatters, so the step itself is written as single-device code and jit-compiled once.
"""

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
FSDP_MIN_SIZE = 2**14  # smaller tensors (norm scales, biases) stay replicated: not worth a collective


def mesh_shape(config, num_devices: int) -> tuple[int, int]:
  """The (data, fsdp) mesh shape the config asks for on `num_devices` devices (ValueError if none)."""
  fsdp = config.mesh.fsdp
  if fsdp < 1 or num_devices % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must divide the device count {num_devices}.")
  data = num_devices // fsdp if config.mesh.data == -1 else config.mesh.data
  if data * fsdp != num_devices:
    raise ValueError(f"mesh data×fsdp = {data}×{fsdp} must equal the device count {num_devices}.")
  return data, fsdp


def make_mesh(config) -> jax.sharding.Mesh:
  devices = jax.devices()[:config.mesh.num_devices or None]
  shape = mesh_shape(config, len(devices))
  # Auto axes: shardings propagate through the model code without explicit out_sharding annotations.
  return jax.make_mesh(shape, ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto),
                       devices=devices)


def param_spec(shape, fsdp_size: int) -> P:
  if fsdp_size == 1 or int(np.prod(shape)) < FSDP_MIN_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
  return P()


def param_shardings(mesh, tree):
  """NamedShardings for a pytree of arrays (or ShapeDtypeStructs): replicated or FSDP."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(x.shape, fsdp)), tree)


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(mesh, local_batch: dict) -> dict:
  """Assembles each host's local NumPy batch into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def place_rows(mesh, rows: dict) -> dict:
  """Global NumPy rows (every host holds the whole batch) as arrays sharded like the batch:
  each host keeps its own shards."""
  place = batch_sharding(mesh)
  return {k: jax.make_array_from_callback(v.shape, place, lambda index, v=v: v[index])
          for k, v in rows.items()}


def fetch(x) -> np.ndarray:
  """A global array's full value on every host (an all-gather when it spans other hosts)."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
