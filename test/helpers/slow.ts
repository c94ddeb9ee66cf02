// Large cases that keep `npm test` under its time budget by running only
// under `npm run test:slow` (COWSHED_SLOW=1). Each names, where it is used,
// the faster test that covers the same behaviour in `npm test`.

/** A test option: `{ skip: slowOnly }` skips the case unless COWSHED_SLOW is set. */
export const slowOnly: string | false = process.env.COWSHED_SLOW ? false : 'a large case: runs under npm run test:slow';
