"""Device side of the farm: runners that measure a model on an Android phone (adb) or on the host CPU,
parsers for the on-device benchmark tools, and the phone-agent."""
