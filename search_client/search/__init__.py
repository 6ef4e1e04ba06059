"""Search mechanics: channel gates (width), hard Gumbel mixed blocks (depth/type), derivation and
the differentiable latency regularizer."""
