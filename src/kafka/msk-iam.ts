/**
 * Amazon MSK with IAM access control: SASL OAUTHBEARER whose token is AWS's own signer output
 * (aws-msk-iam-sasl-signer-js), a SigV4-presigned `kafka-cluster:Connect` request signed with the pod's
 * credentials (IRSA's web identity on EKS, through the default credential chain). No user name or password
 * exists anywhere.
 *
 * kafkajs asks the provider on every (re-)authentication, and tokens live 15 minutes: one token is shared
 * until a minute before it expires, so a reconnect storm does not sign (or fetch credentials) per broker.
 */
import { type GenerateAuthTokenResponse, generateAuthToken } from 'aws-msk-iam-sasl-signer-js';
import type { OauthbearerProviderResponse } from 'kafkajs';

export type MskTokenSigner = (options: { region: string }) => Promise<GenerateAuthTokenResponse>;

/** Kept this long before a token's expiry: a connection is never opened with a token about to lapse. */
const REFRESH_BEFORE_EXPIRY_MS = 60_000;

export function mskIamTokenProvider(o: {
  region: string;
  /** The signer; AWS's by default (tests pass one with fixed credentials). */
  sign?: MskTokenSigner;
  now?: () => number;
}): () => Promise<OauthbearerProviderResponse> {
  const sign = o.sign ?? generateAuthToken;
  const now = o.now ?? Date.now;
  let current: GenerateAuthTokenResponse | undefined;
  let pending: Promise<GenerateAuthTokenResponse> | undefined;
  return async () => {
    if (!current || current.expiryTime - REFRESH_BEFORE_EXPIRY_MS <= now()) {
      // One signing at a time: every connection waiting for a token gets the same one.
      pending ??= sign({ region: o.region }).finally(() => {
        pending = undefined;
      });
      current = await pending;
    }
    return { value: current.token };
  };
}
