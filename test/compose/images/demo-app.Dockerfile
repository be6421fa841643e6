# Stand-in for traefik/whoami: test/compose/images/demo-app.mjs on the Node stand-in.
ARG NODE_IMAGE
FROM ${NODE_IMAGE}
COPY demo-app.mjs /srv/demo-app.mjs
USER 65534:65534
CMD ["node", "/srv/demo-app.mjs"]
