//! Bytes on the wire, sans-IO: the binary protocol codec, the HTTP shim's request/response mapping and a client (issue 3 and 4; empty until then).
