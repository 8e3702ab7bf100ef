// A real OpenID provider for the integration tests: the certified
// `oidc-provider` package, only configured here (no OIDC logic of ours).
//
// Environment:
//   IDP_PORT          port on 127.0.0.1 (HTTPS); the issuer is https://127.0.0.1:<port>
//   IDP_CERT, IDP_KEY PEM server certificate (for 127.0.0.1) and its key
//   IDP_ACCOUNTS      JSON file {"alice": {"name": ..., "email": ..., "groups": [...]}, ...};
//                     the account id is the login name. Read again at every lookup,
//                     so a test may change an account while the IdP runs (replace
//                     the file atomically).
//   IDP_ID_TOKEN_TTL  ID token lifetime in seconds (default 300)
//   IDP_CLIENT_ID     the one public native client (default gantry-cli)
//
// Prints `IDP READY <issuer>` on stdout once it listens; exits on SIGTERM.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';

import Provider, { interactionPolicy } from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`idp.mjs: environment variable ${name} is required`);
    process.exit(2);
  }
  return value;
}

const port = Number.parseInt(required('IDP_PORT'), 10);
const cert = readFileSync(required('IDP_CERT'));
const key = readFileSync(required('IDP_KEY'));
const accountsPath = required('IDP_ACCOUNTS');
const idTokenTtl = Number.parseInt(process.env.IDP_ID_TOKEN_TTL || '300', 10);
const clientId = process.env.IDP_CLIENT_ID || 'gantry-cli';
const issuer = `https://127.0.0.1:${port}`;

if (!Number.isSafeInteger(idTokenTtl) || idTokenTtl <= 0) {
  console.error(`idp.mjs: IDP_ID_TOKEN_TTL must be a positive integer, not ${process.env.IDP_ID_TOKEN_TTL}`);
  process.exit(2);
}

let accounts = JSON.parse(readFileSync(accountsPath, 'utf8'));

function currentAccounts() {
  try {
    accounts = JSON.parse(readFileSync(accountsPath, 'utf8'));
  } catch (error) {
    console.error(`idp.mjs: keeping the previous accounts, ${accountsPath} unreadable: ${error}`);
  }
  return accounts;
}

// A signing key of this run only (not oidc-provider's development key).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `idp-${randomBytes(6).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1']);

function isLoopbackRedirect(value) {
  let parsed;
  try {
    parsed = new URL(value);
  } catch {
    return false;
  }
  return Boolean(
    parsed
      && parsed.protocol === 'http:'
      && LOOPBACK_HOSTS.has(parsed.hostname)
      && parsed.username === ''
      && parsed.password === ''
      && parsed.hash === ''
      && !value.includes('#'),
  );
}

// Sign-in again while the signed-in login is not an account of the file:
// devInteractions accepts any login, and without this check an unknown one
// would end in a server error instead of the sign-in page.
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'unknown_account',
  'the login is not a known account',
  (ctx) => (ctx.oidc.session.accountId && !ctx.oidc.account
    ? interactionPolicy.Check.REQUEST_PROMPT
    : interactionPolicy.Check.NO_NEED_TO_PROMPT),
));

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_name: 'Gantry CLI (test)',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: [
        'authorization_code',
        'refresh_token',
        'urn:ietf:params:oauth:grant-type:device_code',
      ],
      response_types: ['code'],
      // oidc-provider ignores the port of loopback redirect URIs of native
      // clients, but compares the rest exactly; any path is allowed by the
      // redirectUriAllowed override below.
      redirect_uris: ['http://localhost', 'http://127.0.0.1'],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  interactions: { policy },
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups'],
    email: ['email'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  // Refresh tokens whenever the client may use them: oidc-provider drops
  // offline_access from an authorization request without prompt=consent
  // (OSMO's CLI sends none), and the default then issues none.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 14 * 24 * 3600,
    IdToken: idTokenTtl,
    Interaction: 3600,
    RefreshToken: 24 * 3600,
    Session: 24 * 3600,
  },
  async findAccount(_ctx, id) {
    const all = currentAccounts();
    if (typeof id !== 'string' || !Object.hasOwn(all, id)) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        const account = all[id] ?? {};
        const claims = { sub: id, preferred_username: id };
        for (const name of ['name', 'email', 'groups']) {
          if (account[name] !== undefined) {
            claims[name] = account[name];
          }
        }
        return claims;
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

// Port-agnostic loopback redirects with any path (RFC 8252 7.3), for
// `http://localhost:<port>` as well as `http://127.0.0.1:<port>`; anything
// else goes through oidc-provider's own check.
const builtinRedirectUriAllowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
  if (builtinRedirectUriAllowed.call(this, value)) {
    return true;
  }
  return this.applicationType === 'native' && isLoopbackRedirect(value);
};

// The device authorization answer names its polling interval, as
// Keycloak's and Entra's do (RFC 8628 makes it optional, and oidc-provider
// leaves it out; OSMO's CLI reads it unconditionally). One second keeps the
// tests quick.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body
      && typeof ctx.body === 'object' && ctx.body.interval === undefined) {
    ctx.body = { ...ctx.body, interval: 1 };
  }
});

provider.on('server_error', (_ctx, error) => {
  console.error('idp.mjs: server_error', error);
});

const server = https.createServer({ cert, key }, provider.callback());

server.listen(port, '127.0.0.1', () => {
  console.log(`IDP READY ${issuer}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
