"""Normalizing flows as guides, priors and density models, from one family name.

- :mod:`.families`: every family by name (Pyro's transforms and zuko), :class:`FlowStack`,
  :class:`Flow`, :func:`flow_guide`.
- :mod:`.sylvester`: the Householder-Sylvester layer, global and amortized (Pyro lacks both).
- :mod:`.density`: 2-D test energies and toy data, fitted by VI or maximum likelihood.
"""

from .families import FAMILIES, SCORABLE, ZUKO_FLOWS, Flow, FlowGuide, FlowStack, check_family, \
    conditional_flow_distribution, flow_guide
from .sylvester import ConditionalHouseholderSylvester, HouseholderSylvester

__all__ = ["FAMILIES", "SCORABLE", "ZUKO_FLOWS", "FlowStack", "Flow", "FlowGuide", "flow_guide", "check_family",
           "conditional_flow_distribution", "HouseholderSylvester", "ConditionalHouseholderSylvester"]
