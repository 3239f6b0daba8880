"""Signals a host app can connect to (blinker, through Flask), e.g. to keep its own user records:

    @signed_in.connect_via(app)
    def provision(sender, user, **extra): ...   # user: the validated ID token's claims

`signed_in` is sent once the session has started; a receiver that raises refuses the sign-in
(the session is ended again). `signed_out` is sent when a user signs out here.
"""

from flask.signals import Namespace

_signals = Namespace()
signed_in = _signals.signal("flask-entra-signed-in")
signed_out = _signals.signal("flask-entra-signed-out")
