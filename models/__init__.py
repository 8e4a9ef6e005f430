"""The model families. Each module also declares its part of ``python -m inference.fit FAMILY``:

- ``cli_options(parser)`` adds the family's flags (the common ones are ``inference.fit``'s);
- ``from_cli(args, ds)`` builds the model from the parsed flags and the loaded
  :class:`pyro_gen.data.Dataset` (``models.lda`` also takes the ``variant``, a class name);
- ``default_objective(args)``, where the family has one, names the objective it trains with
  when ``--objective`` is not given (else ``trace``);
- ``SEQUENCES = True`` marks a model of padded sequences ``(x, lengths)``: ``--data`` must then
  be one of :data:`SEQUENCE_DATA`.
"""

#: The data sets of padded sequences with their lengths (``Dataset.lengths``), the only valid
#: ``--data`` for a model with ``SEQUENCES = True``.
SEQUENCE_DATA = ("jsb-chorales",)


def need_sequences(args, ds=None) -> None:
    """Refuse data that are not sequences for ``args.model``: ``args.data`` by name before
    loading (``ds`` None), else the loaded ``ds`` by its lengths."""
    if args.data not in SEQUENCE_DATA if ds is None else not ds.lengths:
        raise ValueError(f"model {args.model!r} needs sequence data; valid choices for --data: "
                         f"{', '.join(SEQUENCE_DATA)}")
