// Image commands: images, pull, rmi, inspecti.
import type { Image__Output } from '../../cri/generated/runtime/v1/Image.js';
import type { AuthConfig } from '../../cri/generated/runtime/v1/AuthConfig.js';
import { CliError, OUTPUT_OPTION, UsageError, type Command } from '../command.js';
import { renderOutput, withDecodedInfo } from '../output.js';
import { formatTable, humanSize, shortId, splitRepoTag } from '../table.js';

/** One table row per tag (or digest, or nothing) of each image. */
export function imageRows(images: Image__Output[], noTrunc: boolean): string[][] {
  const rows: string[][] = [];
  for (const image of images) {
    const id = shortId(image.id, noTrunc);
    const size = humanSize(Number(image.size));
    if (image.repo_tags.length > 0) {
      for (const repoTag of image.repo_tags) {
        const { repository, tag } = splitRepoTag(repoTag);
        rows.push([repository, tag, id, size]);
      }
    } else if (image.repo_digests.length > 0) {
      for (const digest of image.repo_digests) rows.push([digest.split('@')[0]!, '<none>', id, size]);
    } else rows.push(['<none>', '<none>', id, size]);
  }
  return rows;
}

/** "user:pass" into a CRI AuthConfig. */
export function parseCreds(creds: string | undefined, auth: string | undefined): AuthConfig | undefined {
  if (auth) return { auth };
  if (creds === undefined) return undefined;
  const colon = creds.indexOf(':');
  if (colon <= 0) throw new UsageError('--creds wants USERNAME:PASSWORD', 'pull');
  return { username: creds.slice(0, colon), password: creds.slice(colon + 1) };
}

export const imagesCommand: Command = {
  name: 'images',
  summary: 'List images',
  usage: '[REF]',
  options: {
    output: OUTPUT_OPTION,
    quiet: { type: 'boolean', short: 'q', description: 'Only show image ids' },
    'no-trunc': { type: 'boolean', description: 'Show full ids' },
  },
  async run(ctx, args) {
    const [ref] = args.expectPositionals(0, 1);
    const format = args.output();
    const res = await ctx.client().image('ListImages', ref ? { filter: { image: { image: ref } } } : {});
    if (args.flag('quiet')) {
      ctx.stdout.write(res.images.map((i) => i.id + '\n').join(''));
      return;
    }
    const noTrunc = args.flag('no-trunc');
    ctx.stdout.write(renderOutput(format, res, () => formatTable(['IMAGE', 'TAG', 'IMAGE ID', 'SIZE'], imageRows(res.images, noTrunc))));
  },
};

export const pullCommand: Command = {
  name: 'pull',
  summary: 'Pull an image from a registry',
  usage: 'REF',
  options: {
    creds: { type: 'string', value: 'USER:PASS', description: 'Registry credentials' },
    auth: { type: 'string', value: 'BASE64', description: 'Registry credentials as base64 of USER:PASS' },
  },
  async run(ctx, args) {
    const [ref] = args.expectPositionals(1, 1);
    const auth = parseCreds(args.string('creds'), args.string('auth'));
    const res = await ctx.client().image('PullImage', { image: { image: ref! }, ...(auth ? { auth } : {}) });
    ctx.stdout.write(`Image is up to date for ${res.image_ref}\n`);
  },
};

export const rmiCommand: Command = {
  name: 'rmi',
  summary: 'Remove images',
  usage: 'REF [REF...]',
  options: {
    all: { type: 'boolean', short: 'a', description: 'Remove all images' },
  },
  async run(ctx, args) {
    const client = ctx.client();
    let refs = args.positionals;
    if (args.flag('all')) refs = (await client.image('ListImages', {})).images.map((i) => i.id);
    else args.expectPositionals(1);
    let failed = 0;
    for (const ref of refs) {
      const status = await client.image('ImageStatus', { image: { image: ref } });
      if (!status.image) {
        ctx.stderr.write(`nodelet: no such image ${ref}\n`);
        failed++;
        continue;
      }
      await client.image('RemoveImage', { image: { image: ref } });
      ctx.stdout.write(`Deleted: ${ref}\n`);
    }
    if (failed > 0) return 1;
  },
};

export const inspectiCommand: Command = {
  name: 'inspecti',
  summary: 'Show the status of images (verbose ImageStatus)',
  usage: 'REF [REF...]',
  options: { output: { ...OUTPUT_OPTION, description: 'Output format: json (default) or yaml' } },
  async run(ctx, args) {
    const refs = args.expectPositionals(1);
    const format = args.output() === 'yaml' ? 'yaml' : 'json';
    for (const ref of refs) {
      const res = await ctx.client().image('ImageStatus', { image: { image: ref }, verbose: true });
      if (!res.image) throw new CliError(`no such image ${ref}`);
      ctx.stdout.write(renderOutput(format, { status: res.image, info: withDecodedInfo(res).info }, () => ''));
    }
  },
};
