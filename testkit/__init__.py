"""Test tooling shared by tests/ and bench/, kept beside the product packages and never installed
(the wheel and the Docker image leave it out; tests/test_wheel.py checks the wheel).

- ``adb_emulator``: the device side of adb on loopback TCP (plays a phone for a real adb server),
  with its small shell in ``emulator_shell``;
- ``standins``: host scripts with the on-device benchmark tools' flags and output formats;
- ``live_server``: a real profiler server on loopback, in a thread or as a process, and ``free_port``;
- ``live_farm``: that server with teams, an agent and predictors, for the client tests;
- ``onnx_models``: small hand-built ONNX models for the ONNX prediction tests.
"""
