"""Where a replica listens: its inter-deployment gRPC server on the node's own address."""

from __future__ import annotations


def bind_replica_grpc_to_node_ip() -> None:
    """Make this replica's inter-deployment gRPC server listen on the node's address only.

    Ray Serve 2.60 binds it to ``[::]:0``, every interface, unauthenticated, with no setting to
    change it. Routers dial the replica at its node address, which is loopback on a local Ray
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) and the pod IP on a cluster, so binding exactly that
    address changes nothing for them. Call from a deployment's constructor: Serve starts that
    server after the constructor returns. Written by hand because Serve has no option for it.
    """
    import ray
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "_tuneserve_bound", False):
        return
    node_ip = ray.util.get_node_ip_address()
    host = f"[{node_ip}]" if ":" in node_ip else node_ip

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = f"{host}:{address.rsplit(':', 1)[1]}"
        return original(server, address)

    add_port._tuneserve_bound = True  # type: ignore[attr-defined]  # a marker on a function
    replica.add_port_to_grpc_server = add_port
