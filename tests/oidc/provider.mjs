// A real OpenID provider (the certified `oidc-provider` package) on loopback over TLS, for the
// console's sign-in tests. Its sign-in and consent pages accept any login name; the accounts
// and their groups come from the environment. Prints "listening <port>" once it accepts.
//
// Environment:
//   OIDC_PORT            port on 127.0.0.1 (0: any free one)
//   OIDC_CERT, OIDC_KEY  PEM files of the TLS certificate (for "localhost") and its key
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI   the one registered client
//   OIDC_ACCOUNTS        JSON: {"login": ["group", ...], ...}
//   OIDC_CLOCK_OFFSET_SECS   shift this provider's clock (negative: behind), e.g. to issue
//                        ID tokens that expired before the relying party sees them
//
// GET /test/discoveries answers how many discovery documents (/.well-known/openid-configuration)
// it has served, so a test can tell how often the relying party discovered it.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const offsetMs = Number(process.env.OIDC_CLOCK_OFFSET_SECS || 0) * 1000;
if (offsetMs !== 0) {
  const realNow = Date.now.bind(Date);
  Date.now = () => realNow() + offsetMs;
}

const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');
const server = https.createServer({
  cert: readFileSync(process.env.OIDC_CERT),
  key: readFileSync(process.env.OIDC_KEY),
});

server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`https://localhost:${port}`, {
    clients: [{
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      response_types: ['code'],
      grant_types: ['authorization_code'],
    }],
    pkce: { required: () => true },
    // The groups claim goes into the ID token itself (not only to userinfo).
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], profile: ['preferred_username'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'groups'],
    findAccount: async (ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, preferred_username: id, groups: accounts[id] || [] }),
    }),
    cookies: { keys: ['wardhook-test-provider-cookie-key'] },
    // Long enough that a provider whose clock is behind still keeps its own sign-in cookies.
    ttl: { Interaction: 86400, Session: 86400, Grant: 86400, IdToken: 3600, AccessToken: 3600 },
  });
  provider.proxy = false;
  const callback = provider.callback();
  let discoveries = 0;
  server.on('request', (req, res) => {
    if (req.url === '/test/discoveries') {
      res.setHeader('content-type', 'text/plain');
      res.end(String(discoveries));
      return;
    }
    if (req.url.startsWith('/.well-known/openid-configuration')) discoveries += 1;
    callback(req, res);
  });
  console.log(`listening ${port}`);
});
