"""The central collector: MQTT 5 shared subscription -> verify -> de-duplicate -> store -> alert.

Modules: ``config`` (collector.yaml), ``verify`` (the verifier edge over the trust library),
``process`` (classification + one transaction per batch), ``store`` / ``sqlite_store`` /
``pg_store`` (idempotent storage), ``alerts`` (CEF / syslog), ``service`` (the paho loop),
``report`` (CLI tables).
"""
