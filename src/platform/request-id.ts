// OpenAI's request id, `req_` and 32 hex digits: the x-request-id header of every HTTP answer and the
// `response.request_id` of a Batch API output line, so that the two can be matched in logs.

import { randomUUID } from 'node:crypto';

export const requestId = (): string => `req_${randomUUID().replaceAll('-', '')}`;
