"""Networking of a jray cluster: who may connect and where sockets live.

- ``auth``: the cluster secret (a 32-byte key in a file only its owner can read),
  the handshake every connection to the head starts with (protocol version, role,
  HMAC proof of the secret over a fresh nonce) and the head's ``Gate`` that checks
  it, so no frame of an unauthenticated peer is ever unpickled;
- ``roles``: which ops each role may send (dispatch keyed by role and op);
- ``endpoints``: one address allocator per scheme (``ipc://`` files in the session
  directory, ``tcp://`` ports on an interface);
- ``curve``: CurveZMQ keys derived from the secret, for encrypted and
  authenticated TCP between machines.
"""
