// SELinux and AppArmor requests on a host without them: the pod still runs (as containerd does on
// such hosts), and the log says what was not applied.
import { existsSync } from 'node:fs';
import type { Logger } from '../common/log.js';

interface SecurityRequest {
  selinux_options?: { user: string; role: string; type: string; level: string } | null;
  apparmor?: { profile_type: string; localhost_ref: string } | null;
  apparmor_profile?: string;
}

const hostHasSelinux = existsSync('/sys/fs/selinux/enforce');

export function reportUnsupportedSecurity(log: Logger, what: string, ctx: SecurityRequest | null | undefined, hostHasAppArmor: boolean): void {
  if (!ctx) return;
  const se = ctx.selinux_options;
  if (se && (se.user || se.role || se.type || se.level) && !hostHasSelinux) {
    log.warn({ selinux: se }, `${what}: SELinux options requested but this host has no SELinux; not applied`);
  }
  const wantsAppArmor = (ctx.apparmor && ctx.apparmor.profile_type !== 'Unconfined') || (ctx.apparmor_profile && ctx.apparmor_profile !== 'unconfined');
  if (wantsAppArmor && !hostHasAppArmor) {
    log.warn({ apparmor: ctx.apparmor ?? ctx.apparmor_profile }, `${what}: AppArmor profile requested but this host has no AppArmor; not applied`);
  }
}
