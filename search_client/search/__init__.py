"""Search mechanics over the supernet's model parts (its channel gates and mixed blocks live in
``search_client.models``): derivation of the compact network and the differentiable latency
regularizer."""
