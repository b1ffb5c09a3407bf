/**
 * OHIF configuration for webpacs: copied into the viewer as /viewer/app-config.js by
 * ui/install_viewer.py. Every request goes to this server's DICOMweb (QIDO-RS, WADO-RS,
 * WADO-URI, bulk data) with the signed-in user's bearer token, or with a share link's access
 * token when the viewer was opened from a share link's landing page.
 *
 * The token reaches OHIF through its `?token=` parameter, which OHIF reads once, keeps in memory
 * and removes from the address bar. It is put there here, in the browser, before the app starts:
 * it never travels in a URL, and a reload finds it again in this browser's storage.
 */
(function attachToken() {
  'use strict';
  function stored() {
    // A share-link session (this tab only) wins over the signed-in user's session.
    const share = window.sessionStorage.getItem('webpacs.shareToken');
    if (share) return share;
    try {
      const session = JSON.parse(window.localStorage.getItem('webpacs.session') || 'null');
      return session && session.access_token;
    } catch (error) {
      return null;
    }
  }
  const token = stored();
  const url = new URL(window.location.href);
  if (token && !url.searchParams.has('token')) {
    url.searchParams.set('token', token);
    window.history.replaceState(window.history.state, '', url);
  }
})();

window.config = {
  name: 'webpacs',
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  customizationService: {},
  // The study list is webpacs' own page (/); the viewer opens one study from there or a share link.
  showStudyList: false,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  groupEnabledModesFirst: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'webpacs',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'webpacs',
      configuration: {
        friendlyName: 'webpacs',
        name: 'webpacs',
        wadoUriRoot: window.location.origin + '/wado',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        supportsStow: true,
        // Images are decoded in the browser from WADO-RS frames; the study browser's thumbnails are
        // the server's small JPEGs (WADO-RS /thumbnail), so the browser decodes no frame for them.
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch', // a plain GET with Accept: image/jpeg
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
  httpErrorHandler: error => {
    // 401: the session ended; the study list signs in again and comes back here.
    if (error && error.status === 401 && !window.sessionStorage.getItem('webpacs.shareToken')) {
      window.location.assign('/?next=' + encodeURIComponent(window.location.pathname + window.location.search));
    }
  },
};
