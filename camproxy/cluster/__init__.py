"""What the daemons of one CamProxy share: the message bus (Redis) behind a small interface.

A leaf library: it imports nothing else of CamProxy, so the cluster logic that uses it can be
unit-tested against :class:`~camproxy.cluster.memorybus.MemoryBus` without a socket, and run
against :class:`~camproxy.cluster.redisbus.RedisBus` in production.
"""
