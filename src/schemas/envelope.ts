/** The built-in event envelope: what `validate` checks when given no --schema. */
export const envelopeSchema = {
  $id: 'cqp:envelope',
  type: 'object',
  required: ['header', 'payload'],
  properties: {
    header: {
      type: 'object',
      required: ['eventId', 'eventType', 'eventName', 'createdTimestamp', 'rel'],
      properties: {
        eventId: { type: 'string', minLength: 1 },
        eventType: { type: 'array', items: { type: 'string' }, minItems: 1 },
        eventName: { type: 'array', items: { type: 'string' }, minItems: 1 },
        createdTimestamp: { type: 'string', format: 'date-time' },
        detectionTimestamp: { type: 'string', format: 'date-time' },
        rel: {
          type: 'object',
          required: ['id', 'schemaVersion'],
          properties: {
            id: { type: 'string', minLength: 1 },
            schemaVersion: { type: 'string', minLength: 1 },
            next: { type: ['string', 'null'] },
          },
        },
      },
    },
    payload: { type: 'object' },
  },
} as const;
