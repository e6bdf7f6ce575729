"""A stand-in for the Azure Functions host that drives the real Python worker
(``azure-functions-runtime``) over the FunctionRpc gRPC protocol, and the Service Bus broker
it delivers from. See host.py (the protocol), encoding.py (what the host sends), broker.py
(settlement), proxy_worker.py and worker_wiring.py (what runs in the worker process)."""
