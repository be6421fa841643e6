/**
 * What the admission probe of a service is (pure, shared by the planner and the prober).
 * It mirrors the backend's HAProxy check (render/template.ts):
 * - `tcp`: connect (tcp services, http services without `healthPath`);
 * - `http`: `GET <healthPath>`, 2xx/3xx passes (HAProxy: `http-check expect status 200-399`),
 *   over TLS for an sslpass service (its check is `check-ssl`);
 * - `tls`: a completed TLS handshake (sslpass services without `healthPath`).
 */
import type { Service } from '../model.js';

export type ProbeSpec =
  | { readonly kind: 'tcp' }
  | { readonly kind: 'http'; readonly path: string; readonly tls: boolean }
  | { readonly kind: 'tls' };

export function probeSpecFor(svc: Service): ProbeSpec {
  if (svc.kind === 'tcp') return { kind: 'tcp' };
  if (svc.options.healthPath !== null) return { kind: 'http', path: svc.options.healthPath, tls: svc.sslPassthrough };
  return svc.sslPassthrough ? { kind: 'tls' } : { kind: 'tcp' };
}
