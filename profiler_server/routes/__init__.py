"""HTTP routers, one per resource. Routes are thin: parse, call one logic function, answer."""
