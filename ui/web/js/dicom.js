// Reading DICOM JSON (PS3.18 §F.2) as people read it.

/** DICOM tags the UI reads, by keyword (PS3.6). */
export const TAG = Object.freeze({
  StudyDate: '00080020',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  ModalitiesInStudy: '00080061',
  InstitutionName: '00080080',
  ReferringPhysicianName: '00080090',
  StudyDescription: '00081030',
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  IssuerOfPatientID: '00100021',
  SeriesInstanceUID: '0020000E',
  SeriesNumber: '00200011',
  SeriesDescription: '0008103E',
  Modality: '00080060',
  NumberOfSeriesRelatedInstances: '00201209',
  StudyInstanceUID: '0020000D',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  FailedSOPSequence: '00081198',
  ReferencedSOPSequence: '00081199',
  FailureReason: '00081197',
  ReferencedSOPInstanceUID: '00081155',
  ErrorComment: '00000902',
});

/** The values of `keyword` in a DICOM JSON object, as a list. */
export function values(dataset, keyword) {
  const element = dataset && dataset[TAG[keyword] || keyword];
  return (element && element.Value) || [];
}

/** The first value, '' when absent; person names as "Family, Given". */
export function first(dataset, keyword) {
  const value = values(dataset, keyword)[0];
  if (value === undefined || value === null) return '';
  if (typeof value === 'object' && 'Alphabetic' in value) return personName(value.Alphabetic);
  return String(value);
}

/** A PN value "Family^Given^Middle^Prefix^Suffix" as "Family, Given Middle" (PS3.5 §6.2.1). */
export function personName(alphabetic) {
  const [family = '', given = '', middle = ''] = String(alphabetic || '').split('^');
  const rest = [given, middle].filter(Boolean).join(' ');
  return rest ? `${family}, ${rest}` : family;
}

/** DA "YYYYMMDD" as "YYYY-MM-DD". */
export function formatDate(da) {
  return /^\d{8}$/.test(da || '') ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da || '';
}

/** A Date as DA "YYYYMMDD" in local time. */
export function toDA(date) {
  const pad = n => String(n).padStart(2, '0');
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}`;
}

/** "YYYY-MM-DD" (an <input type=date> value) as DA. */
export function inputToDA(value) {
  return (value || '').replaceAll('-', '');
}
