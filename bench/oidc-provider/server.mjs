// Peer OAuth 2.0 server for Keyplane benchmarks: panva/oidc-provider issuing
// Ed25519-signed JWT access tokens via the client_credentials grant, served
// over HTTPS (HTTP/1.1 keep-alive) by node:https.
//
// Env: TLS_CERT, TLS_KEY (PEM file paths, required), PORT (default 9443),
//      CLIENT_ID (default "bench"), CLIENT_SECRET (default below),
//      RESOURCE (default "https://api.example"; the JWT audience).
//
// Token request:
//   POST /token
//   Authorization: Basic base64(CLIENT_ID:CLIENT_SECRET)
//   Content-Type: application/x-www-form-urlencoded
//   grant_type=client_credentials

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

const { TLS_CERT, TLS_KEY } = process.env;
if (!TLS_CERT || !TLS_KEY) {
  console.error('TLS_CERT and TLS_KEY must name PEM files');
  process.exit(2);
}
const PORT = Number(process.env.PORT || 9443);
const HOST = '127.0.0.1';
const CLIENT_ID = process.env.CLIENT_ID || 'bench';
const CLIENT_SECRET = process.env.CLIENT_SECRET
  || 'bench-secret-0123456789abcdef0123456789abcdef0123456789abcdef';
const RESOURCE = process.env.RESOURCE || 'https://api.example';
const ACCESS_TOKEN_TTL = 300;
const ISSUER = `https://${HOST}:${PORT}`;

// oidc-provider 9 prints "Unsupported runtime" on any Node.js release older
// than v22 LTS when it is imported. It runs fine on Node 20; drop just that
// one line so the harness output stays clean.
const { warn } = console;
console.warn = (...args) => {
  if (typeof args[0] === 'string' && args[0].includes('oidc-provider WARNING: Unsupported runtime')) return;
  warn.apply(console, args);
};
const { default: Provider, errors } = await import('oidc-provider');
// Same in-memory store oidc-provider uses by default, passed explicitly so it
// does not print its "development-only in-memory adapter" warning.
const { createMemoryAdapter } = await import('oidc-provider/lib/adapters/memory_adapter.js');
console.warn = warn;

function signingKey(type, alg, options) {
  const { privateKey } = generateKeyPairSync(type, options);
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`,
    alg,
    use: 'sig',
  };
}

const provider = new Provider(ISSUER, {
  adapter: createMemoryAdapter(),
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: {
    keys: [
      signingKey('ed25519', 'EdDSA'), // access tokens
      signingKey('rsa', 'RS256', { modulusLength: 2048 }), // ID tokens (never issued here)
    ],
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: '', // Keyplane's client_credentials tokens carry no scopes either
          audience: RESOURCE,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'EdDSA' } },
        };
      },
    },
  },
  ttl: { ClientCredentials: ACCESS_TOKEN_TTL },
});
provider.proxy = false;

// oidc-provider (a Koa app) catches errors itself; report only genuine
// server errors, never ordinary per-request OAuth errors.
provider.on('server_error', (_ctx, err) => console.error('server_error:', err));

const server = createServer({
  cert: readFileSync(TLS_CERT),
  key: readFileSync(TLS_KEY),
  keepAliveTimeout: 60_000,
}, provider.callback());

server.listen(PORT, HOST, () => {
  console.log(`listening ${ISSUER}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)).closeAllConnections());
}
