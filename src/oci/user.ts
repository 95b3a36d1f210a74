// Resolving the user a container runs as, from the CRI security context or the image's
// User, against the image's own /etc/passwd and /etc/group contents.
import { invalidArgument } from '../common/errors.js';
import type { OciUser } from './types.js';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const isNumeric = (s: string) => /^[0-9]+$/.test(s);

function fields(content: string): string[][] {
  return content
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.split(':'));
}

export function parsePasswd(content: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const f of fields(content)) {
    if (f.length < 4 || !isNumeric(f[2]) || !isNumeric(f[3])) continue;
    entries.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]) });
  }
  return entries;
}

export function parseGroup(content: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const f of fields(content)) {
    if (f.length < 3 || !isNumeric(f[2])) continue;
    const members = (f[3] ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter(Boolean);
    entries.push({ name: f[0], gid: Number(f[2]), members });
  }
  return entries;
}

export interface UserRequest {
  /** security_context.run_as_user, when set. */
  runAsUser?: number;
  /** security_context.run_as_username, when set (non-empty). */
  runAsUsername?: string;
  /** security_context.run_as_group, when set. */
  runAsGroup?: number;
  /** The image config's User: "", "name", "uid", "name:group", "uid:gid". */
  imageUser?: string;
  supplementalGroups?: readonly number[];
  /** Strict: only the primary gid and supplemental_groups, not the image's /etc/group memberships. */
  strictSupplementalGroups?: boolean;
  passwd: string;
  group: string;
}

/**
 * The process user: uid, primary gid and the additional gids (primary gid, the user's
 * memberships in the image's /etc/group, supplemental groups; deduplicated and sorted).
 */
export function resolveUser(req: UserRequest): OciUser {
  // A group alone would pair with the image's user, which the caller never chose (containerd and CRI-O refuse it too).
  if (req.runAsGroup !== undefined && req.runAsUser === undefined && !req.runAsUsername) {
    throw invalidArgument('security_context.run_as_group is set without run_as_user or run_as_username');
  }
  const passwd = parsePasswd(req.passwd);
  const groups = parseGroup(req.group);

  let uid: number;
  let gid: number;
  let username: string | undefined;
  let groupSpec: string | undefined;

  const byUid = (id: number) => passwd.find((e) => e.uid === id);
  const byName = (name: string, what: string) => {
    const entry = passwd.find((e) => e.name === name);
    if (!entry) throw invalidArgument(`${what}: user "${name}" not found in the image's /etc/passwd`);
    return entry;
  };

  if (req.runAsUser !== undefined) {
    uid = req.runAsUser;
    const entry = byUid(uid);
    gid = entry?.gid ?? 0;
    username = entry?.name;
  } else if (req.runAsUsername) {
    const entry = byName(req.runAsUsername, 'run_as_username');
    ({ uid, gid } = entry);
    username = entry.name;
  } else {
    const spec = (req.imageUser ?? '').trim();
    const [userPart, ...rest] = spec.split(':');
    groupSpec = rest.length > 0 ? rest.join(':') : undefined;
    if (userPart === '') {
      uid = 0;
      const entry = byUid(0);
      gid = entry?.gid ?? 0;
      username = entry?.name;
    } else if (isNumeric(userPart)) {
      uid = Number(userPart);
      const entry = byUid(uid);
      gid = entry?.gid ?? 0;
      username = entry?.name;
    } else {
      const entry = byName(userPart, 'image User');
      ({ uid, gid } = entry);
      username = entry.name;
    }
    if (groupSpec) {
      if (isNumeric(groupSpec)) {
        gid = Number(groupSpec);
      } else {
        const group = groups.find((g) => g.name === groupSpec);
        if (!group) throw invalidArgument(`image User: group "${groupSpec}" not found in the image's /etc/group`);
        gid = group.gid;
      }
    }
  }
  if (req.runAsGroup !== undefined) gid = req.runAsGroup;

  const additional = new Set<number>([gid]);
  if (!req.strictSupplementalGroups && username !== undefined) {
    for (const g of groups) if (g.members.includes(username)) additional.add(g.gid);
  }
  for (const g of req.supplementalGroups ?? []) additional.add(g);
  return { uid, gid, additionalGids: [...additional].sort((a, b) => a - b) };
}
