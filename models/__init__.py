"""The model families, and the small pieces they share (:func:`mlp`). Each module also declares its part of ``python -m inference.fit FAMILY``:

- ``cli_options(parser)`` adds the family's flags (the common ones are ``inference.fit``'s);
- ``from_cli(args, ds)`` builds the model from the parsed flags and the loaded
  :class:`pyro_gen.data.Dataset` (``models.lda`` also takes the ``variant``, a class name);
- ``default_objective(args)``, where the family has one, names the objective it trains with
  when ``--objective`` is not given (else ``trace``);
- ``training_data(args, ds, train)``, where the family trains on more than the rows x, returns the
  training and validation data ``fit`` gets (``models.ssvae``: ``(x, y, mask)``);
- ``report(args, model, ds, test, out)``, where the family has numbers and figures of its own,
  returns them as ``(metrics, figures)`` for ``metrics.json``;
- ``SEQUENCES = True`` marks a model of padded sequences ``(x, lengths)``: ``--data`` must then
  be one of :data:`SEQUENCE_DATA`.
"""

from typing import Sequence

from torch import nn

#: The hidden nonlinearities :func:`mlp` takes, by name.
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


def activation(name: str) -> type[nn.Module]:
    """The ``nn.Module`` class of a nonlinearity named in :data:`ACTIVATIONS`.

    Raises:
        ValueError: for another name, listing the valid ones.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(sizes: Sequence[int], act: str = "relu") -> nn.Sequential:
    """Linear layers of the given widths (input first, output last) with ``act`` between them,
    none after the last; ``mlp([d])`` is the identity (an empty ``Sequential``)."""
    layer = activation(act)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(layer())
    return nn.Sequential(*layers)


#: The data sets of padded sequences with their lengths (``Dataset.lengths``), the only valid
#: ``--data`` for a model with ``SEQUENCES = True``.
SEQUENCE_DATA = ("jsb-chorales",)


def need_sequences(args, ds=None) -> None:
    """Refuse data that are not sequences for ``args.model``: ``args.data`` by name before
    loading (``ds`` None), else the loaded ``ds`` by its lengths."""
    if args.data not in SEQUENCE_DATA if ds is None else not ds.lengths:
        raise ValueError(f"model {args.model!r} needs sequence data; valid choices for --data: "
                         f"{', '.join(SEQUENCE_DATA)}")
