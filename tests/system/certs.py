"""
Certificates for TLS tests, made with the openssl command line in a test's directory:
a CA, and server certificates (ECDSA P-256 or RSA 2048) signed by it or self-signed.
"""
import os
import subprocess


def _run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def _newkey(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


def make_ca(d, name="Test CA", kind="ec"):
    """(cert path, key path) of a new CA in directory d."""
    cert, key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    _run("openssl", "req", "-x509", *_newkey(kind), "-nodes", "-keyout", key, "-out", cert,
         "-days", "30", "-subj", "/CN=" + name,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return cert, key


def make_cert(d, cn, ca=None, kind="ec", san=None, prefix=None):
    """(cert path, key path) for cn (subjectAltName DNS:cn unless san is given), signed by
    ca = (cert, key), or self-signed when ca is None."""
    prefix = prefix or cn
    cert, key = os.path.join(d, prefix + ".pem"), os.path.join(d, prefix + ".key")
    san = san or "DNS:" + cn
    if ca is None:
        _run("openssl", "req", "-x509", *_newkey(kind), "-nodes", "-keyout", key, "-out", cert,
             "-days", "30", "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + san, cwd=d)
        return cert, key
    csr = os.path.join(d, prefix + ".csr")
    ext = os.path.join(d, prefix + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
    _run("openssl", "req", "-new", *_newkey(kind), "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=" + cn, cwd=d)
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
         "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", ext, cwd=d)
    return cert, key
