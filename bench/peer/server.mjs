// The certified peer for bench/bench_peer.py: node oidc-provider (OpenID Certified), one Node
// process, configured like the Entra emulator so that the same client code measures both:
//
// - https with the certificate the benchmark gives it (the emulator's own localhost certificate);
// - RS256 with an RSA-2048 key (created once in the file the config names, then reused, as the
//   emulator keeps its key in its state folder); published at /jwks;
// - one confidential client (client_secret_post) with the authorization-code and refresh grants;
// - JWT access tokens for one resource ("User.Read"), so a refresh signs two tokens, as the
//   emulator's does (an access token and an ID token);
// - refresh-token rotation on every use (rotateRefreshToken: true; a reused one revokes the grant),
//   and an ID token on every refresh (the refresh token carries "openid");
// - one user, whose password is checked by the sign-in page below; consent is granted with the
//   sign-in (the client is first-party; the emulator shows its sample app no consent page
//   either), so a sign-in is: /auth -> the sign-in page -> its form post -> /auth resumed ->
//   the code at the redirect URI.
//
// Its state is oidc-provider's default in-memory adapter. Usage: node server.mjs CONFIG.json;
// prints "Ready: https://HOST:PORT" once it answers. SIGTERM stops it.

import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

import Provider from 'oidc-provider';

const MAX_FORM_BYTES = 16 * 1024;

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function signingKey(path) {
  try {
    return JSON.parse(fs.readFileSync(path, 'utf8'));
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }),
    kid: crypto.randomBytes(12).toString('base64url'),
    alg: 'RS256',
    use: 'sig',
  };
  fs.writeFileSync(path, JSON.stringify(jwk), { mode: 0o600 });
  return jwk;
}

const { client: app, user, resource } = config;

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function signInPage(uid, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Sign in</title></head><body>
<h1>Sign in</h1>${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<input type="text" name="username" required>
<input type="password" name="password" required>
<button type="submit">Sign in</button>
</form></body></html>`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_FORM_BYTES) {
        reject(new Error('form too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function sameSecret(given, expected) {
  const a = crypto.createHash('sha256').update(String(given)).digest();
  const b = crypto.createHash('sha256').update(String(expected)).digest();
  return crypto.timingSafeEqual(a, b);
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

const server = https.createServer({
  cert: fs.readFileSync(config.cert),
  key: fs.readFileSync(config.key),
});

server.listen(config.port ?? 0, config.host ?? 'localhost', () => {
  const { port } = server.address();
  const issuer = `https://${config.host ?? 'localhost'}:${port}`;

  const provider = new Provider(issuer, {
    clients: [{
      client_id: app.client_id,
      client_secret: app.client_secret,
      redirect_uris: [app.redirect_uri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: { keys: [signingKey(config.signing_key)] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'profile'],
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
    conformIdTokenClaims: false, // the profile claims in the ID token, as Entra's
    rotateRefreshToken: true,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 600,
      IdToken: 3600,
      Interaction: 600,
      Session: 86400,
      Grant: 90 * 86400,
      RefreshToken: 90 * 86400,
    },
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          if (indicator !== resource) throw new Provider.errors.InvalidTarget();
          return {
            scope: 'User.Read',
            audience: resource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    async findAccount(_ctx, id) {
      if (id !== user.id) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, name: user.name, preferred_username: user.username };
        },
      };
    },
  });
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));

  async function grantFor(details) {
    const grant = new provider.Grant({ clientId: details.params.client_id, accountId: user.id });
    grant.addOIDCScope('openid offline_access profile');
    grant.addResourceScope(resource, 'User.Read');
    return grant.save();
  }

  async function interaction(req, res) {
    const [, , uid, action] = new URL(req.url, issuer).pathname.split('/');
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
      send(res, 400, 'interaction mismatch', 'text/plain');
      return;
    }
    if (req.method === 'GET' && !action) {
      if (details.prompt.name === 'login') {
        send(res, 200, signInPage(uid));
      } else { // signed in already: consent comes with the sign-in
        await provider.interactionFinished(req, res, { consent: { grantId: await grantFor(details) } });
      }
      return;
    }
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const known = String(form.get('username') ?? '').toLowerCase() === user.username.toLowerCase();
      if (!(sameSecret(form.get('password') ?? '', user.password) && known)) {
        send(res, 200, signInPage(uid, 'Your account or password is incorrect.'));
        return;
      }
      await provider.interactionFinished(req, res, {
        login: { accountId: user.id },
        consent: { grantId: await grantFor(details) },
      }, { mergeWithLastSubmission: false });
      return;
    }
    send(res, 405, 'method not allowed', 'text/plain');
  }

  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res).catch((error) => {
        console.error('interaction', error.message);
        if (!res.headersSent) send(res, 400, 'sign-in failed', 'text/plain');
      });
    } else {
      callback(req, res);
    }
  });
  console.log(`Ready: ${issuer}`);
});

process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
